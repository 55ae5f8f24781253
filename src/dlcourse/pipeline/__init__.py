"""The pipeline's machinery: params, where outputs go (`layout`), MLflow tracking, the model registry
and multi-process training. It may import `dlcourse.course`, never `dlcourse.report`."""
