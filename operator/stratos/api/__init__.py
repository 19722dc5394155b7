"""stratos.api"""
