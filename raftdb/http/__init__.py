"""The client API over HTTP: the Starlette app, its routes, the fast path, OpenAPI.

:func:`~raftdb.http.app.create_api` builds the ASGI app over a
:class:`~raftdb.node.handle.NodeHandle`; ``uvicorn raftdb.app:app`` serves it.
"""
