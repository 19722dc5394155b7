"""stratos.controller"""
