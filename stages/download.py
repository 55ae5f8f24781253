"""Stage `download`: MNIST's four IDX files and CIFAR-10's binary archive, verified.

From the official URLs (official MD5s), or from DATA_MIRROR, a folder or URL laid out as
`<dataset>/<file>` with a SHA256SUMS file (e.g. DATA_MIRROR=../shared/datasets).
"""

import os

from dlcourse import progress
from dlcourse.course import sources
from dlcourse.pipeline.layout import RAW
from dlcourse.pipeline.stage import stage


def main() -> None:
    mirror = os.environ.get("DATA_MIRROR") or None
    with stage("download", tags={"data.mirror": mirror or "official"}) as job:
        fetched = {}
        for dataset in sources.SOURCES:
            files = sources.download(dataset, RAW, mirror=mirror, **job.params.download.model_dump())
            fetched[dataset] = sum(f.stat().st_size for f in files)
            job.run.log_metrics({f"{dataset}.bytes": fetched[dataset]})
        sources.extract_tar(RAW / "cifar10" / "cifar-10-binary.tar.gz", RAW / "cifar10" / "extracted")
    progress.summary(job.name, ", ".join(f"{dataset} {size / 1e6:.0f} MB" for dataset, size in fetched.items())
                     + f" from {mirror or 'the official sources'}, checksums checked")


if __name__ == "__main__":
    main()
