// Rules for `fastport bench --source fanotify --scan` and trying `fastport scan`: a few string,
// hex and regular-expression rules of the kinds real rule sets use. The test signature is not
// in any real file, so a scan of real files denies nothing and measures the full scan.
rule fastport_test_signature {
    strings:
        $sig = "FASTPORT-TEST-SIGNATURE-3f9a"
    condition:
        $sig
}

rule eicar_like {
    strings:
        $a = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR"
    condition:
        $a at 0
}

rule elf_with_upx {
    strings:
        $upx = "UPX!"
    condition:
        uint32(0) == 0x464c457f and $upx
}

rule suspicious_powershell {
    strings:
        $enc = /powershell(\.exe)? +-(e|enc|encodedcommand) +[A-Za-z0-9+\/=]{40,}/ nocase
        $iex = "IEX (New-Object Net.WebClient).DownloadString" nocase
    condition:
        any of them
}

rule hex_marker {
    strings:
        $h = { 4D 5A 90 00 03 00 00 00 04 00 00 00 FF FF 00 00 ?? ?? 00 00 DE AD BE EF }
    condition:
        $h
}
