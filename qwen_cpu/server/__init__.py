"""An OpenAI-compatible HTTP server over the continuous-batching scheduler (qwen_cpu.scheduler).

    from qwen_cpu.server import create_app      # an ASGI application, for any ASGI server
    app = create_app("model.gguf", parallel=4)

`qwen-cpu serve MODEL` runs it under uvicorn (run.py). Layout: schemas.py (request bodies),
app.py (routes, API key, limits), streams.py (OpenAI result and SSE shapes), metrics.py,
static/ (the chat page at /).
"""

from .app import create_app
from .run import serve

__all__ = ["create_app", "serve"]
