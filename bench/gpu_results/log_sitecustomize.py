# On the device's PYTHONPATH only (copied into /root/site as sitecustomize.py): a foreground study writes no
# autotune.log, so the `autotune` logger's INFO records (the per-pairing lines) go to $AUTOTUNE_LOG_TO; its
# warnings stay on stderr.
import os

if os.environ.get("AUTOTUNE_LOG_TO"):
    import logging

    _log = logging.getLogger("autotune")
    _file = logging.FileHandler(os.environ["AUTOTUNE_LOG_TO"])
    _file.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    _err = logging.StreamHandler()
    _err.setLevel(logging.WARNING)
    _log.addHandler(_file)
    _log.addHandler(_err)
    _log.setLevel(logging.INFO)
