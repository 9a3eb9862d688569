"""The ASGI edge: authenticate, parse, make one service call, render."""
