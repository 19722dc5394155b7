"""stratos.catalog"""
