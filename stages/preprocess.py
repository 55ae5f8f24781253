"""Stage `preprocess`: the raw files, read by the project's own IDX and CIFAR-10 readers and
validated, become uint8 image tensors and int64 label tensors."""

from dlcourse import progress
from dlcourse.course import data
from dlcourse.files import write_json
from dlcourse.pipeline.layout import DATA_SUMMARY, RAW, prepared_split
from dlcourse.pipeline.stage import stage


def main() -> None:
    with stage("preprocess") as job:  # params.yaml checked even though this stage has no params of its own
        run = job.run
        cifar_folder = RAW / "cifar10" / data.CIFAR10_FOLDER
        readers = {
            "mnist": (lambda split: data.read_mnist(RAW / "mnist", split), data.MNIST_CLASSES),
            "cifar10": (lambda split: data.read_cifar10(cifar_folder, split), data.read_cifar10_classes(cifar_folder)),
        }
        summary = {}
        for dataset, (read, classes) in readers.items():
            for split in ("train", "test"):
                images, labels = read(split)
                data.save_split(prepared_split(dataset, split), images, labels, classes)
                pixels = images.astype("float32") / 255
                summary[f"{dataset}.{split}"] = {
                    "count": len(labels),
                    "shape": list(images.shape[1:]),
                    "pixel_mean": round(float(pixels.mean()), 4),
                    "pixel_std": round(float(pixels.std()), 4),
                    "class_counts": [int((labels == c).sum()) for c in range(len(classes))],
                }
        write_json(DATA_SUMMARY, summary)
        run.log_metrics({f"{name}.count": s["count"] for name, s in summary.items()})
        run.log_artifact(DATA_SUMMARY)
    progress.summary(job.name, ", ".join(f"{name} {s['count']} images" for name, s in summary.items()))


if __name__ == "__main__":
    main()
