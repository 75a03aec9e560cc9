"""Choosing where a request goes: pure routers plus the executor that runs attempts."""

from routing.base import ClusterView, DeploymentState, RouteInput, RoutePlan, Router
from routing.breaker import Breakers, BreakerState
from routing.cluster import ClusterState
from routing.errors import AllAttemptsFailed, BreakerOpen, NoHealthyDeployment, RoutingError
from routing.executor import Classifier, ErrorClass, Execution, Executor, is_deployment_fault
from routing.registry import ROUTERS, build_router

__all__ = [
    "ROUTERS",
    "AllAttemptsFailed",
    "BreakerOpen",
    "BreakerState",
    "Breakers",
    "Classifier",
    "ClusterState",
    "ClusterView",
    "DeploymentState",
    "ErrorClass",
    "Execution",
    "Executor",
    "NoHealthyDeployment",
    "RouteInput",
    "RoutePlan",
    "Router",
    "RoutingError",
    "build_router",
    "is_deployment_fault",
]
