"""The one command-line convention of atamp_tf's programs (absl flags).

Bad input (a flag, a file, a model, a run directory) is one line `error: ...` on stderr that
names it, and exit status 2, never a traceback; anything else is a bug and keeps its traceback.
"""
import sys

from absl import app, flags

BAD_INPUT = (ValueError, OSError, app.UsageError)
EXIT_BAD_INPUT = 2


def fail(message):
    """Prints the one error line and exits with EXIT_BAD_INPUT."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


HELP_FLAGS = ("--help", "-help", "--helpshort", "--helpfull", "-h", "-?")


def parse_flags(argv):
    """absl's parser, with a bad flag reported as one line (absl adds a second and exits 1)
    and --help exiting 0 (absl exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        return fail(err)
    except SystemExit as done:
        if done.code == 1 and any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise


def _show_in_help(module_name):
    """--help lists the main module's key flags; here the program's flags live in its cli
    module (and what it adopts), so they are registered for the main module too."""
    main_name = sys.argv[0]
    known = flags.FLAGS.key_flags_by_module_dict().get(module_name, [])
    for flag in [*flags.FLAGS.flags_by_module_dict().get(module_name, []), *known]:
        flags.FLAGS.register_key_flag_for_module(main_name, flag)


def no_positional(argv):
    """Refuses positional arguments (every command but the zoo's takes flags only)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags only; --help)")


def run(main, *, errors=()):
    """Runs `main(argv)` under absl with the convention above; `errors` adds the program's own
    bad-input exception types to ValueError, OSError and absl's UsageError."""
    caught = BAD_INPUT + tuple(errors)
    _show_in_help(main.__module__)
    main_module = sys.modules.get("__main__")
    if main_module is not None and sys.modules.get(main.__module__) is not None:
        main_module.__doc__ = sys.modules[main.__module__].__doc__  # absl's usage text

    def guarded(argv):
        try:
            return main(argv)
        except caught as err:
            return fail(err)

    app.run(guarded, flags_parser=parse_flags)
