"""stratos.decide"""
