"""Ray start-up and the one Ray Data pattern the stages share (``--ray`` of generate and annotate).

A stage turns its pending inputs into JSON strings, and a pool of actors (one model replica or one
set of clients each, built once in the actor's ``__init__``) maps them in batches. Results stream
back to the driver process, which alone writes the output through
:class:`~mralign_plugin.pipeline.resumable.ResumableOutput`, so resume and summaries work as without Ray.
"""

from __future__ import annotations

from collections.abc import Iterator


def init_ray(address: str | None, num_cpus: int):
    """Import Ray and connect: ``address`` None/"auto" = the running cluster, "local" = start one here."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError("--ray needs Ray Data: pip install 'mralign_plugin[ray]'") from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address or "auto")
            except ConnectionError as e:
                raise ValueError(f"--ray: cannot reach a Ray cluster ({e}); start one with `ray start --head` "
                                 "or pass --ray-address local") from None
    return ray


def map_on_actor_pool(items: list[str], udf: type, udf_kwargs: dict, *, address: str | None, workers: int,
                      batch_size: int, num_gpus: float = 0.0, progress: bool = True) -> Iterator[str]:
    """The results of ``udf`` over ``items`` on a pool of ``workers`` Ray actors, in completion order.

    Args:
        items: one JSON string per pending input.
        udf: a Ray Data batch UDF class; ``udf(**udf_kwargs)(batch)`` maps ``{"item": [...]}`` to
            ``{"result": [JSON string, ...]}``.
        address: the Ray cluster (None/"auto" = running, "local" = start one here).
        workers: actor pool size. batch_size: items per batch (and per block).
        num_gpus: GPUs per actor (0: none).
    """
    if not items:
        return
    ray = init_ray(address, max(2, workers))
    ray.data.DataContext.get_current().enable_progress_bars = progress
    ds = ray.data.from_items([{"item": s} for s in items], override_num_blocks=-(-len(items) // batch_size)).map_batches(
        udf,
        fn_constructor_kwargs=udf_kwargs,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=num_gpus or None,
        batch_format="numpy",
    )
    for row in ds.iter_rows():
        yield row["result"]
