"""stratos.local"""
