"""Pure-Python twins of the compiled core: the same API, written plainly (per byte where that
is natural). They are the test oracle for the Cython modules and the fallback when the
extension modules are not built."""
