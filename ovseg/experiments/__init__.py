"""The experiments behind the chapter notebooks: data functions (rows, arrays) and figure functions
(returning matplotlib ``Figure``), one module per thesis section. Notebooks only call these and save
the results through :mod:`ovseg.report`.
"""
