"""The course's machine learning: data, models, training, evaluation, attacks, corruptions, fooling
images, CPPNs and the GANs (`gans/`). It imports nothing from `dlcourse.pipeline` or `dlcourse.report`."""
