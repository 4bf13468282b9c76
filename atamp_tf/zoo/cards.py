"""Model cards: the human-readable page of a zoo model, rendered from its manifest entry.

The card is generated, never edited by hand, so it can only say what the manifest says.
"""
from atamp_tf.attacks import registry  # the rows' order: the registry's report order
from atamp_tf.formatting import percent
from atamp_tf.zoo import manifest as zoo_manifest


def _fraction(value):
    return percent(value, 2, missing="not run", suffix="%")


def _settings(attack):
    """An attack's settings: its "settings" object (evaluate's report), else its other keys."""
    if not isinstance(attack, dict):
        return "-"
    items = attack["settings"] if isinstance(attack.get("settings"), dict) else {
        k: v for k, v in attack.items() if k != "accuracy"}
    return ", ".join(f"{k}={v}" for k, v in items.items()) or "-"


def _worst_case(worst):
    """evaluate's worst_case ({"accuracy", "over", ...}), a bare fraction, or nothing."""
    if worst is None:
        return "not recorded"
    if isinstance(worst, dict) and "accuracy" in worst:
        over = ", ".join(worst.get("over", [])) or "the attacks above"
        return f"{_fraction(worst['accuracy'])} (robust to every one of {over})"
    return _fraction(worst) if isinstance(worst, (int, float)) else str(worst)


def _metrics_table(metrics):
    accuracy, attacks = metrics["accuracy"], metrics.get("attacks", {})
    names = registry.sort_names(accuracy)
    rows = ["| attack | accuracy | settings |", "| --- | --- | --- |"]
    rows += [f"| {k} | {_fraction(accuracy[k])} | {_settings(attacks.get(k))} |" for k in names]
    return "\n".join(rows)


def _earlier_versions(entry):
    """The card's last section: the previous_versions still addressable by revision, if any."""
    versions = entry.get("previous_versions")
    if not versions:
        return ""
    rows = [f"| `{v['file']['sha256'][:16]}` | {v['created']} | "
            f"{_fraction(v['metrics']['accuracy']['natural'])} | `{v['file']['url']}` |"
            for v in versions]
    return (f"""
## Earlier versions
Newest first; each is still loadable with `zoo.load("{entry['name']}", revision="<sha256 or its first digits>")`:

| sha256 (first 16) | created | natural accuracy | file |
| --- | --- | --- | --- |
""" + "\n".join(rows) + "\n")


def _compared_with(entry):
    """The card's 'Compared with' section: the published rows beside this entry's own."""
    compared = entry.get("compared_with")
    if not compared:
        return ""
    accuracy = entry["metrics"]["accuracy"]
    rows = [f"| {r['model']} | {_fraction(r['natural'])} | "
            f"{'-' if r['reported'] is None else _fraction(r['reported'])} | "
            f"{_fraction(r['autoattack'])} |" for r in compared["rows"]]
    version = zoo_manifest.autoattack_version(entry["metrics"])
    ours_aa = _fraction(accuracy.get("autoattack")) + (
        f" ({version}, not the standard AutoAttack)"
        if accuracy.get("autoattack") is not None and version != "standard" else "")
    rows.append(f"| **this model** ({entry['metrics']['examples']}) | "
                f"{_fraction(accuracy['natural'])} | - | {ours_aa} |")
    threat = compared["threat_model"]
    return ("\n## Compared with\nPublished results under the same threat model "
            f"({threat['dataset']}, {threat['norm']} eps {threat['eps']:g}; source: "
            f"{compared['source']}), beside this model's own from the table above:\n\n"
            "| model | natural | reported robust | AutoAttack |\n| --- | --- | --- | --- |\n"
            + "\n".join(rows) + "\n")


def _reference_parity(entry):
    """The card's section on our AutoAttack against the reference's, on this very file."""
    parity = entry.get("reference_parity")
    if not parity:
        return ""
    n, disagree = parity["num_examples"], parity["num_disagree"]
    which = (f" ({'example' if disagree == 1 else 'examples'} "
             f"{', '.join(str(i) for i in parity['disagree_indices'])})"
             if 0 < disagree <= 20 else "")
    return (f"\n## AutoAttack against the reference\nThe {parity['version']} AutoAttack of this "
            f"project and the reference implementation ({parity['reference']}, on this ONNX "
            f"file) on {parity['examples']} ({n} examples): robust accuracy "
            f"{_fraction(parity['robust_ours'])} (ours) and "
            f"{_fraction(parity['robust_reference'])} (reference); they agree on "
            f"{_fraction(parity['agreement'])} of the examples; {disagree} "
            f"{'differs' if disagree == 1 else 'differ'}{which}. "
            f"Per-example table: `{parity['report']}`. "
            f"{_ours_run(parity, entry['metrics'])}\n")


def _ours_run(parity, metrics):
    """Whether the parity's "ours" is the evaluation behind the numbers above (the same
    report's fingerprint), another evaluation read back, or a rerun."""
    read_from, own = parity.get("ours_evaluation"), metrics.get("report_fingerprint")
    if read_from and read_from == own:
        return "Ours there is this card's own evaluation, read back."
    if read_from and own:
        run = "read back from another evaluation of this model, not the one above"
    elif read_from or parity["ours"].startswith("keras (read from"):
        run = ("read back from an evaluation that this entry cannot identify (exported before "
               "evaluations were fingerprinted), perhaps not the one above")
    else:
        run = "a separate run of our AutoAttack"
    return (f"Ours there is {run} ({parity['ours']}), whose random draws differ from the "
            "evaluation above, so its robust accuracy may differ from the table's by a few "
            "examples.")


def _budget(training):
    """The card's training-budget lines: what the checkpoint cost and how it was chosen."""
    budget = training.get("budget")
    if not budget:
        return "- Training budget and checkpoint selection: not recorded\n"
    rule = {"holdout": "the epoch with the best held-out robust accuracy (PGD on training "
                       "images held out from training; the test set was not used to choose)",
            "last": "the last epoch"}[budget["selected_on"]]
    return (f"- Training budget: {budget['epochs']} epochs, {budget['attack_steps']}-step "
            f"attack per batch, {budget['train_seconds'] / 3600:.2f} h of training (the run's "
            "wall time)\n"
            f"- Published checkpoint: `{budget['checkpoint']}` = epoch {budget['epoch']}, "
            f"{rule}\n")


def _failed_checks(metrics):
    """A warning above the numbers when the evaluation failed sanity checks (published only
    with export --allow_failed_checks)."""
    failed = metrics.get("failed_checks")
    if not failed:
        return ""
    lines = "".join(f"- **{c['name']}**: {c['detail']}\n" for c in failed)
    return ("**WARNING: the evaluation failed sanity checks; these numbers may overstate the "
            f"robustness.**\n{lines}\n")


def render_card(entry):
    """Markdown model card of a (validated) manifest entry."""
    threat, arch, training = entry["threat_model"], entry["architecture"], entry["training"]
    amp, metrics, file = training["amp"], entry["metrics"], entry["file"]
    shape = "[" + ", ".join(["batch"] + [str(d) for d in entry["input"]["shape"][1:]]) + "]"
    sizes = ", ".join(f"{k} {arch[k]}" for k in ("width", "depth") if arch.get(k) is not None)
    worst = metrics.get("worst_case")
    flags_text = "\n".join(training["flags"]) or "(no flags recorded)"
    parity = entry.get("parity")
    parity_line = (f"max |logit difference| Keras vs onnxruntime {parity['max_abs_diff']:.2e} on "
                   f"{parity['num_examples']} examples, identical predictions" if parity else
                   "not recorded")
    amp_text = (f"with AMP (delta {amp['delta']}, xi {amp['xi']}, {amp['steps']} ascent "
                f"step(s), scope {amp['scope']})" if amp["delta"] else "without AMP (delta 0)")
    scope = f"## Scope\n{entry['notes'].strip()}\n\n" if entry.get("notes") else ""
    keras_line = (f"- Keras model: `{entry['keras_url']}` (sha256 `{entry['keras_sha256']}`)\n"
                  if "keras_url" in entry else "")
    return f"""# {entry['name']}

Robust classifier for **{entry['dataset']}** under the **{threat['norm']}** threat model,
eps = {threat['eps']:.6g} (pixels in [0, 1]).

{scope}## Use
```python
from atamp_tf import zoo
session = zoo.load("{entry['name']}")  # downloads, checks sha256, caches
logits = session.run(None, {{"{entry['input']['name']}": images}})[0]  # images: float32 NHWC in [0, 1]
```
Input `{entry['input']['name']}`: float32 {shape} (NHWC), values in [0, 1]; the normalisation
is inside the model. Output `{entry['output']['name']}`: logits over
{entry['output']['num_classes']} classes.

## Robustness
Evaluated on {metrics['examples']} ({metrics['num_examples']} examples of the
`{metrics['split']}` split), from the evaluation report of this checkpoint:

{_failed_checks(metrics)}{_metrics_table(metrics)}

Worst case per example: {_worst_case(worst)}.
{_compared_with(entry)}{_reference_parity(entry)}
## Model
- Architecture: {arch['arch']}{f' ({sizes})' if sizes else ''}
- Training: {training['method']} {amp_text}
{_budget(training)}- Flagfile: `{training['flagfile'] or 'not recorded'}`; the run's flags:
```
{flags_text}
```

## File
- ONNX: `{file['url']}`, {file['size']} bytes, sha256 `{file['sha256']}`
{keras_line}- Export parity: {parity_line}
- Licence: {entry['licence']}; created {entry['created']}; code version `{entry['code_version']}`
{_earlier_versions(entry)}"""
