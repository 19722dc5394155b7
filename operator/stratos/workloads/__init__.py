"""stratos.workloads"""
