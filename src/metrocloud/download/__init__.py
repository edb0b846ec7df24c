"""Software updates: signed packages, the install root, and the download manager.

Import the submodules themselves; this package imports nothing, so that
:mod:`metrocloud.download.installroot` can be activated before any legally relevant module.
"""
