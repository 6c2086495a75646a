"""The official Python server SDK (`pusher` on PyPI) against the built herald-server binary:
triggers, batches, queries, channel and user authentication, terminate, webhooks, and a wrong
secret refused. A plain WebSocket client plays the browser."""

import json
import os
import re
import socket
import subprocess
import time

import pusher
import pusher.http
import pytest
import websocket

APP_ID, KEY, SECRET = "5150", "py-key", "py-secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def server():
    port, ops = free_port(), free_port()
    proc = subprocess.Popen(
        [os.environ["HERALD_BIN"], "--bind", "127.0.0.1", "--port", str(port), "--metrics-port", str(ops),
         "--app-id", APP_ID, "--app-key", KEY, "--app-secret", SECRET, "--app-client-events"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "/healthz" in line:
            break
    yield port
    proc.terminate()
    assert proc.wait(timeout=15) == 0


def sdk(port, secret=SECRET):
    return pusher.Pusher(app_id=APP_ID, key=KEY, secret=secret, host="127.0.0.1", port=port, ssl=False)


class Socket:
    """A browser-like socket speaking the Pusher protocol."""

    def __init__(self, port):
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7&client=py", timeout=5)
        hello = self.recv()
        assert hello["event"] == "pusher:connection_established"
        self.socket_id = json.loads(hello["data"])["socket_id"]

    def recv(self):
        while True:
            frame = json.loads(self.ws.recv())
            if frame["event"] != "pusher:ping":
                return frame

    def send(self, event, data):
        self.ws.send(json.dumps({"event": event, "data": data}))

    def subscribe(self, channel, auth=None):
        data = {"channel": channel}
        if auth:
            data.update(auth)
        self.send("pusher:subscribe", data)
        return self.recv()


def test_trigger_reaches_a_subscriber_and_socket_id_excludes(server):
    a, b = Socket(server), Socket(server)
    assert a.subscribe("py-news")["event"] == "pusher_internal:subscription_succeeded"
    b.subscribe("py-news")
    assert sdk(server).trigger("py-news", "update", {"n": 1}, socket_id=b.socket_id) == {}
    got = a.recv()
    assert (got["event"], got["channel"], json.loads(got["data"])) == ("update", "py-news", {"n": 1})
    b.ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        b.recv()


def test_batch_and_channel_queries(server):
    s = Socket(server)
    s.subscribe("py-batch")
    client = sdk(server)
    assert client.trigger_batch([{"channel": "py-batch", "name": "one", "data": "1"},
                                 {"channel": "py-batch", "name": "two", "data": "2"}]) == {}
    assert [s.recv()["event"], s.recv()["event"]] == ["one", "two"]
    assert client.channel_info("py-batch", ["subscription_count"]) == {"occupied": True, "subscription_count": 1}
    assert "py-batch" in client.channels_info()["channels"]


def test_presence_authenticated_by_the_sdk_and_users_query(server):
    s = Socket(server)
    auth = sdk(server).authenticate(channel="presence-py", socket_id=s.socket_id,
                                    custom_data={"user_id": "guido", "user_info": {"lang": "py"}})
    ok = s.subscribe("presence-py", auth)
    assert ok["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(ok["data"])["presence"]["hash"] == {"guido": {"lang": "py"}}
    assert sdk(server).users_info("presence-py") == {"users": [{"id": "guido"}]}
    info = sdk(server).channels_info(prefix_filter="presence-", attributes=["user_count"])
    assert info["channels"]["presence-py"] == {"user_count": 1}


def test_user_sign_in_and_terminate_connections(server):
    s = Socket(server)
    signed = sdk(server).authenticate_user(socket_id=s.socket_id, user_data={"id": "py-user"})
    s.send("pusher:signin", signed)
    assert s.recv()["event"] == "pusher:signin_success"
    assert sdk(server).terminate_user_connections("py-user") == {}
    error = s.recv()
    assert error["data"]["code"] == 4009


def test_a_wrong_secret_is_refused(server):
    with pytest.raises(pusher.http.PusherBadAuth):
        sdk(server, secret="wrong").trigger("py-news", "e", "x")


def test_private_channel_with_an_sdk_signature_and_a_forged_one(server):
    s = Socket(server)
    good = sdk(server).authenticate(channel="private-py", socket_id=s.socket_id)
    assert s.subscribe("private-py", good)["event"] == "pusher_internal:subscription_succeeded"
    forged = sdk(server, secret="wrong").authenticate(channel="private-py2", socket_id=s.socket_id)
    refused = s.subscribe("private-py2", forged)
    assert refused["event"] == "pusher:subscription_error"
    assert refused["data"]["status"] == 401
    assert re.match(r"^\d+\.\d+$", s.socket_id)


def test_the_python_backend_example_triggers(server):
    import sys
    example = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "backend", "trigger.py")
    env = dict(os.environ, PUSHER_APP_ID=APP_ID, PUSHER_KEY=KEY, PUSHER_SECRET=SECRET, PUSHER_PORT=str(server))
    s = Socket(server)
    s.subscribe("lobby")
    result = subprocess.run([sys.executable, example], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "occupied channels:" in result.stdout
    event = s.recv()
    assert (event["event"], json.loads(event["data"])) == ("count", {"messages": 42})
