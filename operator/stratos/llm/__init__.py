"""stratos.llm"""
