"""Templates of ``mlplatform new-problem`` (``mlplatform.scaffold``): ``*.tmpl`` files."""
