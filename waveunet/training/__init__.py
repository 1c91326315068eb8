"""Training: ``waveunet train`` (:mod:`.train`), a run's parts built from its config
(:mod:`.builder`), the loop and its one step (:mod:`.solver`), validation (:mod:`.validation`),
the run's folder and the resume rule (:mod:`.run_folder`), the run log (:mod:`.run_log`) and
everything ``torch.distributed`` (:mod:`.distributed`).
"""
