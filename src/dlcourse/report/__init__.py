"""The report: the course's claims and their checks, the machine it ran on, figures and the document.
It may import `dlcourse.course` and `dlcourse.pipeline`."""
