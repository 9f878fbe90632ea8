"""A trial's dataset on the node it runs on: present, verified and identical to the data
the search was started with, fetched there when missing; otherwise one error naming the
node. Also the node's identity, tagged on the trial's MLflow run.

The search's reference is a files checksum (``spmi.data.files_checksum``): the spec's MD5
table when the files are verified (the driver reads no data), else the driver's files'.
Searches started before it recorded a checksum of the decoded arrays (``of="arrays"``)."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spmi.config import TrainConfig
from spmi.data import (
    DataError,
    ImageData,
    dataset_folder,
    default_root,
    file_md5s,
    files_checksum,
    get_info,
    load_dataset,
)


@dataclass(frozen=True)
class NodeData:
    """The dataset as this node holds it, and its checksum (what the trial's run records)."""

    data: ImageData
    checksum: str


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
    debian = get_info(cfg.dataset).source.debian
    defaults = {default_root(cfg.dataset).resolve()} | ({debian.folder} if debian is not None else set())
    if cfg.data_root and Path(cfg.data_root) not in defaults:
        argv += ["--data-root", cfg.data_root]  # the default place (or the package's): installed the default way
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = fetch_main(argv)
    lines = err.getvalue().strip().splitlines()
    return "" if code == 0 else (lines[-1] if lines else f"exit code {code}").removeprefix("error: ")


def node_dataset(cfg: TrainConfig, checksum: str, fetch: Callable[[TrainConfig], str] = fetch_dataset,
                 of: str = "files") -> NodeData:
    """``cfg``'s dataset on this node. A missing dataset is fetched with ``fetch`` (which
    MD5-checks the files). Its files are MD5-checked against the spec (unless
    ``cfg.verify_data`` is off) and their files checksum must equal ``checksum`` (the
    search's reference; '' skips that). ``of="arrays"``: ``checksum`` is an older search's,
    over the decoded arrays. DataError naming the node otherwise."""
    where = f"node {node_label()}"
    try:
        dataset_folder(cfg.dataset, cfg.data_root)
    except DataError as missing:
        problem = fetch(cfg)
        if problem:
            raise DataError(f"{where}: {missing}; fetching it there failed: {problem}") from None
    try:
        own = "" if of == "arrays" else files_checksum(file_md5s(cfg.dataset, cfg.data_root, cfg.verify_data))
        data = load_dataset(cfg.dataset, cfg.data_root, verify=False)  # its files were checked just above
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    own = own or data.checksum
    if checksum and own != checksum:
        if cfg.verify_data and of != "arrays":  # its files are the spec's: the spec is not the driver's
            raise DataError(f"{where}: the {cfg.dataset} spec of this node's spmi lists other files or MD5 sums than "
                            f"the driver's (files checksum {own}, expected {checksum}); install the same spmi on "
                            f"every node")
        raise DataError(f"{where}: {cfg.dataset} in {cfg.data_root} is not the data the search was started with "
                        f"({of} checksum {own}, expected {checksum}); make its files identical on every node")
    return NodeData(data, own)
