"""A kernel side in a process of its own, for the tests that stop or kill it (run as a script):
creates the socket-transport port argv[1], says "ready", then "connected" once a client is
(admitted), and "disconnected" whenever a connection ends;
argv[2] asks for more: "tell-pending" says "pending" once the client's get waits here,
"send-one" sends it one message wanting a reply (waiting for it forever), "send-loop" sends
one message after another, each once the last was answered, saying "reply <bytes>" for each.
Then it waits to be killed."""
import signal
import sys
import threading
import time

from fastport.sim import FilterManager

fm = FilterManager("socket")
clients = []
connected = threading.Event()
gone = threading.Event()
said = threading.Lock()


def say(line):  # one whole line at a time (print() writes the text and its end apart)
    with said:
        print(line, flush=True)


def on_connect(client, context):
    clients.append(client)
    connected.set()


def on_disconnect(client):
    gone.set()
    say("disconnected")


server = fm.create_port(sys.argv[1], connect_notify=on_connect, disconnect_notify=on_disconnect)
say("ready")
connected.wait()
while not clients[0].connected and not gone.is_set():  # admitted once on_connect returned
    time.sleep(0.001)
say("connected")
if sys.argv[2:] == ["tell-pending"]:
    while clients[0].pending_gets == 0:
        time.sleep(0.001)
    say("pending")
elif sys.argv[2:] == ["send-one"]:
    server.send(clients[0], bytes(64), reply_length=8, timeout=None)
elif sys.argv[2:] == ["send-loop"]:
    while clients[0].connected:
        r = server.send(clients[0], bytes(64), reply_length=8, timeout=None)
        say(f"reply {r.reply}")
signal.pause()
