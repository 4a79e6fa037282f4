/* Temporary: socket transport not yet built. */
#include "internal.h"
fp_ntstatus fsim_sock_listen(fsim_server *s) { (void)s; return FP_STATUS_INVALID_PARAMETER; }
void fsim_sock_unlisten(fsim_server *s) { (void)s; }
fp_hresult fsim_sock_connect(const char *name, const void *ctx, uint32_t ctx_size, SIM_HANDLE *out)
{ (void)name; (void)ctx; (void)ctx_size; (void)out; return FP_E_FILE_NOT_FOUND; }
const char *fsim_runtime_dir(void) { return "/tmp"; }
