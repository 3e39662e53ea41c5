"""Kubernetes and Istio manifests for the system, generated from its code (see README.md)."""
