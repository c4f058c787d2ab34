"""The conformance suite for the backend named by ``pytest --flux-backend NAME`` (added to the
run by `flux.testing.plugin`; not collected otherwise, since its name is not ``test_*``)."""
from flux.testing import BackendConformance
from flux.testing.plugin import selected_backend


class TestFluxBackend(BackendConformance):
    """Every conformance check, against the backend given on the command line."""

    backend = selected_backend()
    skip_if_missing = False      # asked for by name: a missing backend is a failure
