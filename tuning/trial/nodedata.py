"""A trial's dataset on the node it runs on: present, verified and identical to the one
the search driver checked, fetched there when missing; otherwise one error naming the
node. Also the node's identity, tagged on the trial's MLflow run."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Callable
from pathlib import Path

from spmi.config import TrainConfig
from spmi.data import DataError, ImageData, default_root, load_dataset


def node_id() -> str:
    """The Ray node id of this process ('' outside Ray)."""
    try:
        import ray
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # no runtime context: not in a Ray worker
        return ""


def node_label() -> str:
    """``host (node <id prefix>)``: how errors name the node."""
    nid = node_id()
    return f"{socket.gethostname()} (node {nid[:12]})" if nid else socket.gethostname()


def node_tags() -> dict[str, str]:
    """MLflow tags of where a trial runs."""
    return {"node": node_id(), "host": socket.gethostname()}


def fetch_dataset(cfg: TrainConfig) -> str:
    """Run the dataset fetch entry (``python -m spmi.data.fetch``) for ``cfg``'s dataset and
    folder on this node; returns '' on success, else its error line."""
    from spmi.data.fetch import main as fetch_main
    argv = [cfg.dataset]
    if cfg.data_root and Path(cfg.data_root) != default_root(cfg.dataset).resolve():
        argv += ["--data-root", cfg.data_root]  # the default place: installed the default way
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = fetch_main(argv)
    lines = err.getvalue().strip().splitlines()
    return "" if code == 0 else (lines[-1] if lines else f"exit code {code}").removeprefix("error: ")


def node_dataset(cfg: TrainConfig, checksum: str,
                 fetch: Callable[[TrainConfig], str] = fetch_dataset) -> ImageData:
    """``cfg``'s dataset on this node, its content checksum equal to ``checksum`` (the
    driver's, over the decoded arrays; '' skips that). A missing dataset is fetched with
    ``fetch`` (which MD5-checks the files); DataError naming the node otherwise."""
    where = f"node {node_label()}"
    try:
        data = load_dataset(cfg.dataset, cfg.data_root, verify=False)  # the checksum below covers it
    except DataError as missing:
        problem = fetch(cfg)
        if problem:
            raise DataError(f"{where}: {missing}; fetching it there failed: {problem}") from None
        try:
            data = load_dataset(cfg.dataset, cfg.data_root, verify=False)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
    if checksum and data.checksum != checksum:
        raise DataError(f"{where}: {cfg.dataset} in {cfg.data_root} is not the data the search was started with "
                        f"(content checksum {data.checksum}, expected {checksum}); make its files identical on "
                        f"every node")
    return data
