//! Conformance suites; see below.
