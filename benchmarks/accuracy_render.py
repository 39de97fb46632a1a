"""The accuracy section of BENCHMARKS.md, from the result JSON files alone: each row judged by
its rule, the notes under each group, the runs that match no row, the machines, and the
compare figures."""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import common
from accuracy_targets import (GROUPS, MATCHING_FIELDS, NOTES_MD, RULES, Group, Target, all_targets,
                              load_notes)
from minivgg.compare import format_duration
from minivgg.models import Recipe, get_recipe
from minivgg.run_record import RunRecord

RESULTS_DIR = common.ROOT / "benchmarks" / "results" / "accuracy"
FIGURES_SUBDIR = "figures"
SECTION = "accuracy"
DESCRIPTIVE_FIELDS = {"name", "description", "source", "published"}   # words, not training


def changes_against_current(record: dict) -> dict:
    """How the recipe a result was trained with differs from its named recipe as it is now.

    The `changes` stored in a result are against the recipe at run time; once a recipe is
    re-chosen, its older results differ from it and must not count against its target.
    """
    config = record.get("recipe_config")
    try:
        base = get_recipe(record.get("recipe", ""))
    except KeyError:
        return dict(record.get("changes") or {})
    if not isinstance(config, dict):
        return dict(record.get("changes") or {})
    base = json.loads(json.dumps(base.to_dict()))     # tuples -> lists, as in the JSON
    # a field added to Recipe after a result was written had its default then
    defaults = json.loads(json.dumps(Recipe(name="", model="", dataset="").to_dict()))
    return {k: config.get(k, defaults[k]) for k in base
            if k not in DESCRIPTIVE_FIELDS and config.get(k, defaults[k]) != base[k]}



def load_results(results_dir: Path) -> list:
    """The run records of `results_dir` as dicts, each with its file name under "_file" and its
    changes against the recipe as it is now."""
    records = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            record = RunRecord.read(path).to_dict()
        except ValueError as err:
            raise ValueError(f"{err}; move other files out of {results_dir}") from None
        record["_file"] = path.name
        record["changes"] = changes_against_current(record)
        records.append(record)
    return records


def matches(target: Target, record: dict) -> bool:
    changes = set(record.get("changes") or {})
    return (record.get("recipe") == target.recipe and changes <= MATCHING_FIELDS
            and record.get("batch_size") == target.batch())


def rows_for(records: list) -> tuple[dict, list]:
    """({target key: its records sorted by seed}, records matching no target)."""
    by_key, used = {}, set()
    for target in all_targets():
        mine = sorted((r for r in records if matches(target, r)), key=lambda r: r.get("seed", 0))
        seeds = [r.get("seed") for r in mine]
        if len(seeds) != len(set(seeds)):
            files = ", ".join(r["_file"] for r in mine)
            raise ValueError(f"{target.key}: two result files for the same seed ({files}); "
                             f"delete the stale one")
        by_key[target.key] = mine
        used.update(id(r) for r in mine)
    return by_key, [r for r in records if id(r) not in used]


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def seed_mean_of_last3(records: list) -> list:
    """Test accuracy of each of the last 3 epochs, averaged over the records (seeds); [] when a
    record has fewer than 3 scored epochs."""
    curves = [[row.get("test_acc") for row in (r.get("history") or [])[-3:]] for r in records]
    if not curves or any(len(c) != 3 or None in c for c in curves):
        return []
    return [statistics.fmean(column) for column in zip(*curves)]


def _reaches(value, target: Target) -> bool:
    return value is not None and (value > target.target() if target.strict else value >= target.target())


@dataclass
class Verdict:
    status: str            # "not run yet" | "pass" | "FAIL" | "pending"
    text: str              # the result cell
    shortfall: str | None  # a sentence for the notes when we fall short


def judge(target: Target, records: list) -> Verdict:
    """Final-epoch figures only, by the target's rule (accuracy_targets.RULES)."""
    if not records:
        return Verdict("not run yet", "not run yet", None)
    done = [r for r in records if r.get("status") == "completed"]
    diverged = len(records) - len(done)
    problems = []
    if diverged:
        problems.append(f"{diverged} of {len(records)} seed(s) diverged")
    params = [r.get("num_parameters") for r in done if r.get("num_parameters") is not None]
    if target.max_params and params and max(params) >= target.max_params:
        problems.append(f"{max(params):,} parameters, not under {target.max_params:,}")
    rule = RULES[target.rule]
    per_seed = [r.get(rule.field) for r in done]
    if rule.pool == "curve":
        value = min(seed_mean_of_last3(done), default=None)
    elif rule.pool == "min":
        value = min((v for v in per_seed if v is not None), default=None)
    else:
        value, _ = mean_std(per_seed)
    reached = sum(_reaches(v, target) for v in per_seed)
    if not _reaches(value, target):
        shown = "-" if value is None else f"{value:.4f}"
        gap = "" if value is None else f", {100 * (target.target() - value):.2f} points short"
        problems.append(f"{rule.what} {shown} vs the target {target.target():g}{gap}")
    counts = f"{reached}/{len(records)} seeds reach it"
    if problems:
        return Verdict("FAIL", f"FAIL ({counts})", "; ".join(problems) + f"; {counts}")
    if len(records) < len(target.seeds):
        return Verdict("pending", f"pending: {len(records)}/{len(target.seeds)} seeds run "
                                  f"(so far {counts})", None)
    return Verdict("pass", f"pass ({counts})", None)


def _acc(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _acc_spread(values: list) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "–"
    n = len([v for v in values if v is not None])
    return f"{mean:.4f} ± {std:.4f} (n={n})" if std is not None else f"{mean:.4f} (n=1)"


def _target_text(target: Target) -> str:
    sign = ">" if target.strict else "≥"
    text = f"{sign} {target.target():g}{RULES[target.rule].wording}"
    if target.max_params:
        text += f", < {target.max_params:,} params"
    return text


def _published_text(target: Target) -> str:
    if target.published_text:
        return target.published_text
    figure = target.published_figure()
    return "– (ours)" if figure is None else f"{figure:g}"


def _length(name: str, done: list) -> str:
    recipe = get_recipe(name)
    if recipe.iters:
        return f"{recipe.iters:,} iters"
    if not recipe.patience:
        return f"{recipe.epochs} epochs"
    ran = ", ".join(str(r.get("epochs_run")) for r in done)
    return f"≤ {recipe.epochs} epochs (early stopping{': ran ' + ran if ran else ''})"


def _figure_link(group: Group, md_path: Path, results_dir: Path) -> str | None:
    figure = results_dir / FIGURES_SUBDIR / f"{group.key}.png"
    if not figure.is_file():
        return None
    rel = os.path.relpath(figure, md_path.parent)
    links = [f"[curves]({rel})"]
    iterations = figure.with_name(f"{group.key}-iterations.png")
    if iterations.is_file():
        links.append(f"[training loss per iteration]({os.path.relpath(iterations, md_path.parent)})")
    return "Compare figure (the lowest seed of each row): " + ", ".join(links) + "."


HEADER = ("| recipe | batch | trained | params | published | target | final test acc "
          "(mean ± std) | mean of last 3 epochs | best epoch† | result | time per run | "
          "train img/s | command |")


def group_table(group: Group, by_key: dict, md_path: Path, results_dir: Path, remarks: dict) -> list:
    lines = [f"### {group.title}", ""]
    link = _figure_link(group, md_path, results_dir)
    if link and any(by_key[t.key] for t in group.targets):
        lines += [link, ""]
    lines += [HEADER, _separator(HEADER)]
    notes = []
    for target in group.targets:
        records = by_key[target.key]
        done = [r for r in records if r.get("status") == "completed"]
        verdict = judge(target, records)
        params = sorted({r.get("num_parameters") for r in done if r.get("num_parameters")})
        best, _ = mean_std([r.get("best_epoch_test_acc") for r in done])
        wall, _ = mean_std([r.get("wall_time_s") for r in done])
        speed, _ = mean_std([r.get("images_per_s") for r in done])
        last3 = [r.get("mean_last3_test_acc") for r in done]
        cells = [
            target.recipe, str(target.batch()), _length(target.recipe, done),
            ", ".join(f"{p:,}" for p in params) or "–",
            _published_text(target), _target_text(target),
            _acc_spread([r.get("final_test_acc") for r in done]) if records else "not run yet",
            _acc_spread(last3) if any(v is not None for v in last3) else "–",
            _acc(best), verdict.text, format_duration(wall),
            "–" if speed is None else f"{speed:,.0f}", f"`{target.command()}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        remark = remarks.get(target.key)
        if verdict.shortfall or remark:
            label = target.recipe + (f" (batch {target.batch_size})" if target.batch_size else "")
            parts = [p for p in (verdict.shortfall, remark) if p]
            notes.append(f"- **{label}** falls short: " + ". ".join(p.rstrip(".") for p in parts) + "."
                         if verdict.shortfall else f"- **{label}**: {remark}")
    if notes:
        lines += ["", *notes]
    return lines + [""]


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def _last3_mean(history: list, key: str):
    values = [row.get(key) for row in history[-3:]]
    return statistics.fmean(values) if len(values) == 3 and None not in values else None


def other_runs_table(records: list) -> list:
    if not records:
        return []
    lines = ["### Other runs (recipe changed with --set: not counted against any target)", "",
             "Runs with a validation split (val_fraction) show its accuracy: that, never the test "
             "accuracy, is what chooses between such runs.", "",
             "| file | recipe | changes | trained | val acc, mean of last 3 | final test acc | time |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["_file"]):
        changes = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted((r.get("changes") or {}).items()))
        trained = (f"{r.get('iterations')} iters" if r.get("unit") == "iterations"
                   else f"{r.get('epochs_run')} epochs")
        val = _last3_mean(r.get("history") or [], "val_acc")
        lines.append(f"| {r['_file']} | {r.get('recipe')} | {changes or '–'} | {trained} | "
                     f"{_acc(val) if val is not None else '–'} | "
                     f"{_acc(r.get('final_test_acc'))} | {format_duration(r.get('wall_time_s'))} |")
    return lines + [""]


def machines_list(records: list) -> list:
    """Which machine ran which results: times and img/s are only comparable within one."""
    by_machine: dict = {}
    for r in records:
        m = r.get("machine") or {}
        threads = (m.get("threads") or {}).get("OPENBLAS_NUM_THREADS", "default")
        key = (m.get("cpu") or "unknown CPU", m.get("cpu_count"))
        by_machine.setdefault(key, {}).setdefault(threads, []).append(r["_file"].removesuffix(".json"))
    if not by_machine:
        return []
    lines = ["### Machines", ""]
    for (cpu, count), by_threads in sorted(by_machine.items(), key=lambda kv: str(kv[0])):
        for threads, files in sorted(by_threads.items()):
            lines.append(f"- {cpu}, {count} CPUs, {threads} BLAS thread(s): {len(files)} runs "
                         f"({', '.join(sorted(files))})")
    return lines + [""]


def render_section(results_dir: Path = RESULTS_DIR, md_path: Path = common.BENCHMARKS_MD,
                   notes_md: Path = NOTES_MD) -> str:
    """The generated text between the accuracy markers, from the JSON files and the notes."""
    records = load_results(results_dir)
    notes = load_notes(notes_md) if Path(notes_md).exists() else {}
    by_key, others = rows_for(records)
    lines = [
        "",
        "<!-- generated by `python benchmarks/accuracy.py table` from "
        f"{os.path.relpath(results_dir, md_path.parent)}/*.json: do not edit by hand -->",
        "",
    ]
    for group in GROUPS:
        lines += group_table(group, by_key, md_path, results_dir, notes)
    lines += other_runs_table(others)
    lines += machines_list(records)
    return "\n".join(lines).rstrip() + "\n"


def write_table(results_dir: Path = RESULTS_DIR, md_path: Path = common.BENCHMARKS_MD,
                notes_md: Path = NOTES_MD) -> bool:
    """Rewrite the accuracy section of BENCHMARKS.md; True when it changed."""
    return common.MarkedSection(SECTION, md_path).write(render_section(results_dir, md_path, notes_md))


def write_figures(results_dir: Path = RESULTS_DIR) -> list:
    """One compare figure per group, from the lowest seed of each row that has a result."""
    from minivgg.compare import compare_runs

    by_key, _ = rows_for(load_results(results_dir))
    written = []
    for group in GROUPS:
        sweep = len(group.targets) > 1 and len({t.recipe for t in group.targets}) == 1
        paths, labels = [], []
        for target in group.targets:
            done = [r for r in by_key[target.key] if r.get("status") == "completed" and r.get("history")]
            if done:
                paths.append(results_dir / done[0]["_file"])
                labels.append(f"batch {target.batch()}" if sweep else target.recipe)
        if not paths:
            continue
        out = results_dir / FIGURES_SUBDIR / f"{group.key}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        compare_runs(paths, out, labels=labels, title=group.title)
        written.append(out)
    return written


