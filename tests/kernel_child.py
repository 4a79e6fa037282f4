"""A kernel side in a process of its own, for the tests that stop or kill it (run as a script):
creates the socket-transport port argv[1], says "ready", then "connected" once a client is;
argv[2] asks for more: "tell-pending" says "pending" once the client's get waits here,
"send-one" sends it one message wanting a reply (waiting for it forever). Then it waits to be
killed."""
import signal
import sys
import threading
import time

from fastport.sim import FilterManager

fm = FilterManager("socket")
clients = []
connected = threading.Event()


def on_connect(client, context):
    clients.append(client)
    connected.set()


server = fm.create_port(sys.argv[1], connect_notify=on_connect)
print("ready", flush=True)
connected.wait()
while not clients[0].connected:  # admitted once on_connect has returned, not while it runs
    time.sleep(0.001)
print("connected", flush=True)
if sys.argv[2:] == ["tell-pending"]:
    while clients[0].pending_gets == 0:
        time.sleep(0.001)
    print("pending", flush=True)
elif sys.argv[2:] == ["send-one"]:
    server.send(clients[0], bytes(64), reply_length=8, timeout=None)
signal.pause()
