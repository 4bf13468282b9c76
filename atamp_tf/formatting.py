"""Accuracies as the reports, tables and cards print them: one formatter, one rounding."""


def percent(fraction, digits=2, *, se=None, missing="-", suffix=""):
    """0.9357 -> '93.57' (digits after the point, then suffix); with a standard error se,
    '93.57 ± 0.30'; missing (e.g. an attack not run) for None."""
    if fraction is None:
        return missing
    text = f"{100 * fraction:.{digits}f}{suffix}"
    return text if se is None else f"{text} ± {100 * se:.{digits}f}"
