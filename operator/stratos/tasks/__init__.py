"""stratos.tasks"""
