"""The GAN timeline: one network pair per era (`eras`), the training loop, checkpoints and sampling
(`generative`), and the scores of the samples (`metrics`)."""
