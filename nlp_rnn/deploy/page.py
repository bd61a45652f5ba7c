"""The demo page `nlp-rnn serve` shows at `/`: one self-contained HTML file (no build step, no CDN, works
offline) that lists the served models and offers, per task, a text box and the result — translations with
their n-best list and attention map, every class's probability as bars, generated text streamed as it is
produced. Errors show the server's one line. With an API key on the server, the page asks for it.
The page is `demo.html` beside this module (package data)."""

from importlib import resources

PAGE = (resources.files("nlp_rnn.deploy") / "demo.html").read_text(encoding="utf-8")
