"""Shared plumbing for the thin CLIs in tools/: one error line, non-zero exit, no traceback."""
import os
import re
import sys

from liverzoo.errors import ConfigError, LiverzooError


def quiet_tensorflow():
    """Silences TensorFlow's C++ start-up chatter.

    TF 2.21 prints oneDNN/CUDA notices through absl before its log level applies, so the
    variable alone is not enough: TensorFlow is imported here with file descriptor 2
    pointed at /dev/null, then stderr is restored for our own error lines. Does nothing
    where TensorFlow is already imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    from liverzoo.quiet import silenced_stderr

    with silenced_stderr():
        import tensorflow

        # Device discovery prints its own CUDA notices on machines without a GPU.
        tensorflow.config.list_physical_devices()


# absl words a bad value "flag --NAME=VALUE: REASON" and a missing required flag
# "flag --NAME=None: Flag --NAME must have a value other than None."
_ABSL_FLAG_ERROR = re.compile(r"^flag --(?P<name>\w+)=(?P<value>.*?): (?P<reason>.*)$", re.S)


def flag_error_line(error):
    """The one-line text of an absl flag error, worded like the library's own errors.

    Example:
        >>> flag_error_line(flags.IllegalFlagValueError("flag --format=onnx: value should be one of <a|b>"))
        "--format='onnx': value should be one of <a|b>"
    """
    match = _ABSL_FLAG_ERROR.match(str(error))
    if match is None:
        return str(error)
    name, value, reason = match["name"], match["value"], match["reason"]
    if value == "None" and "must have a value other than None" in reason:
        return f"--{name} is required"
    return f"--{name}={value!r}: {reason}"


def number_list_flag(name, values, kind):
    """An absl list flag of numbers (`--input_shape=128,128,5`) as a tuple of `kind`; `None` when unset.

    Example:
        >>> number_list_flag("input_shape", ["128", "128", "5"], int)
        (128, 128, 5)
    """
    if values is None:
        return None
    try:
        return tuple(kind(v) for v in values)
    except ValueError:
        raise ConfigError(f"--{name}={','.join(values)}: expected comma-separated {kind.__name__}s") from None


def run(main, argv=None):
    """Run an absl `main`, turning expected errors into `error: ...` on stderr and exit 1."""
    from absl import app, flags

    # absl reports a bad flag in two FATAL lines; parse first to give the one-line form.
    app.define_help_flags()  # --help/--helpfull keep working when we parse first
    try:
        flags.FLAGS(sys.argv if argv is None else argv)
    except flags.Error as e:
        print(f"error: {flag_error_line(e)}", file=sys.stderr)
        sys.exit(1)

    def wrapped(args):
        from absl import logging

        # absl shows INFO by default; TensorFlow's SavedModel writer (export, the benchmarks'
        # exports) logs every step there. The tools print what they do themselves.
        logging.set_verbosity(logging.WARNING)
        try:
            return main(args)
        except LiverzooError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped, argv=argv)
