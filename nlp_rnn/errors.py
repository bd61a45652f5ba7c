"""The one exception type users see: a single line naming the file, line, column or key at fault."""


class NlpRnnError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits with status 2."""


class BundleError(NlpRnnError):
    """A model bundle that is missing, damaged, foreign or from an incompatible version."""


class InvalidRequest(NlpRnnError):
    """A request whose fields are each valid but do not fit together (HTTP 422)."""
