"""Jobs: the wiring from names to a finished record (manifest, backbone, store, protocol).

The command line, the demo and the benchmarks call these; the protocols themselves stay
pure functions over arrays. The contract (:mod:`medtransfer.jobs.base`):

* a job module defines its options dataclass, whose fields declare their defaults and
  flags with :func:`~medtransfer.jobs.options.option`, a run function
  ``run(roots, *options) -> JobResult`` and a ``JOB`` entry naming the sub-command, its
  help and the options classes the run function takes;
* :mod:`medtransfer.jobs.registry` lists the ``JOB`` entries; the command line builds one
  sub-command per entry and prints each result's ``lines``;
* a job module imports its protocol and the heavy modules (torch) inside its run
  function, so that building the command line stays light.
"""
