"""Shared plumbing for the thin CLIs in tools/: one error line, non-zero exit, no traceback."""
import os
import sys

from liverzoo.errors import LiverzooError


def quiet_tensorflow():
    """Silence TensorFlow's C++ start-up chatter before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main, argv=None):
    """Run an absl `main`, turning expected errors into `error: ...` on stderr and exit 1."""
    from absl import app

    def wrapped(args):
        try:
            return main(args)
        except LiverzooError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped, argv=argv)
