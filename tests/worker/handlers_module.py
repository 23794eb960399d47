"""A handler module as a team writes one, for `--handlers tests.worker.handlers_module`."""

from quorra.worker import handler


@handler("greet")
def greet(job):
    return {"greeting": f"hello {job.payload['name']}"}


@handler("shout")
@handler("yell")
def shout(job):
    return job.payload["text"].upper()
