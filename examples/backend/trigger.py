"""Trigger events on Herald with the official Python server SDK (pip install pusher).
Only the host and port differ from hosted Pusher.

    PUSHER_APP_ID=1 PUSHER_KEY=herald-dev-key PUSHER_SECRET=herald-dev-secret python trigger.py
"""
import os

import pusher

client = pusher.Pusher(
    app_id=os.environ.get("PUSHER_APP_ID", "1"),
    key=os.environ.get("PUSHER_KEY", "herald-dev-key"),
    secret=os.environ.get("PUSHER_SECRET", "herald-dev-secret"),
    host=os.environ.get("PUSHER_HOST", "127.0.0.1"),  # in Kubernetes: <cluster>.<namespace>.svc
    port=int(os.environ.get("PUSHER_PORT", "6001")),
    ssl=False,
)

client.trigger("lobby", "count", {"messages": 42})
client.trigger(["private-room"], "message", {"user": "backend", "text": "hello from Python"})
print("occupied channels:", client.channels_info())
