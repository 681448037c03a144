"""The conformance suite for Storage and StateMachine plugins (``docs/plugins.md``)."""
