"""A search's folder: which search it holds, what each trial's runs recorded, and the result files.

    tune_runs/<name>/kcaptcha_search.json       the search's fingerprint (tuner, space, untuned fields)
    tune_runs/<name>/trial_*/kcaptcha_run_*.json who ran a trial, its parameters, steps and seconds
    tune_runs/<name>/summary.csv, summary.json   every trial, best first
"""

import csv
import glob
import json
import os

from kcaptcha import files
from kcaptcha.config import Config

SEARCH_FILE = "kcaptcha_search.json"
RUN_FILE_PATTERN = "kcaptcha_run_*.json"


def active_values(trial) -> dict:
    """A trial's hyperparameter values, leaving out those of architectures it did not choose."""
    hp = trial.hyperparameters
    return {name: value for name, value in hp.values.items() if hp.is_active(name)}


def _differences(previous: dict, current: dict) -> list:
    found = []
    if previous.get("tuner") != current["tuner"]:
        found.append(f"tuner {previous.get('tuner')!r} -> {current['tuner']!r}")
    old_space, new_space = previous.get("space", {}), current["space"]
    changed = sorted(n for n in set(old_space) | set(new_space) if old_space.get(n) != new_space.get(n))
    if changed:
        found.append(f"hyperparameters {', '.join(changed)}")
    old_config = previous.get("config", {})
    for key, value in current["config"].items():
        if old_config.get(key) != value:
            found.append(f"{key} {old_config.get(key)!r} -> {value!r}")
    return found


def check_tune_dir(tune_dir: str, fingerprint: dict, overwrite: bool = False, worker: bool = False) -> None:
    """Refuses to resume a folder that holds a different search (or none, for a worker)."""
    path = os.path.join(tune_dir, SEARCH_FILE)
    if overwrite:
        return
    if not os.path.exists(path):
        if worker:
            raise ValueError(f"{tune_dir} holds no {SEARCH_FILE}: give every worker the chief's --tune_dir "
                             "on a folder they all share.")
        if glob.glob(os.path.join(tune_dir, "*.json")) or glob.glob(os.path.join(tune_dir, "trial_*")):
            raise ValueError(f"{tune_dir} holds files but no {SEARCH_FILE}, so it is not a kcaptcha search; "
                             "use another --tune_dir or pass --overwrite to start over.")
        return
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Damaged search file {path}: {error}; pass --overwrite to start over.") from None
    if previous.get("fingerprint") != fingerprint["fingerprint"]:
        differences = "; ".join(_differences(previous, fingerprint)) or "the search space"
        advice = ("start the chief and every worker with the same flags" if worker else
                  "use another --tune_dir or pass --overwrite to start it over")
        raise ValueError(f"{tune_dir} holds a different search ({differences}); {advice}.")


def run_records(trial_dir: str) -> list:
    """What each run of a trial recorded (`kcaptcha_run_<tuner id>.json`), oldest first."""
    records = []
    for path in sorted(glob.glob(os.path.join(trial_dir, RUN_FILE_PATTERN)), key=os.path.getmtime):
        with open(path, encoding="utf-8") as f:
            records.append(json.load(f))
    return records


def format_table(rows: list) -> str:
    """The rows as an aligned text table."""
    if not rows:
        return "(no trials)"
    columns = list(rows[0])

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 0.01 and value else f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def write_summary(rows: list, tune_dir: str, details: dict) -> dict:
    """Writes `summary.csv` and `summary.json` into `tune_dir`; returns their paths."""
    csv_path, json_path = os.path.join(tune_dir, "summary.csv"), os.path.join(tune_dir, "summary.json")
    with files.atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    files.atomic_write_text(json_path, json.dumps({**details, "trials": rows}, indent=2))
    return {"summary_csv": csv_path, "summary_json": json_path}


def write_best_flagfile(config: Config, path: str, comment_lines) -> str:
    """`config` as a self-contained flagfile that `bin/train --flagfile=<path>` accepts as it is."""
    header = [f"# bin/train --flagfile={path}", *(f"# {line}" for line in comment_lines)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.atomic_write_text(path, "\n".join(header) + "\n" + config.to_flagfile())
    return path


