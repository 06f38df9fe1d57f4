"""Make a trained model fast on this machine within an accuracy budget (``sepconv optimize``).

The decision in four stages, each a module: the *sites* a model offers (:mod:`~sepconv.optimize.sites`:
which convolutions and linear layers may become separable or low-rank, at which ranks), what each
candidate *costs* on an engine, measured here and cached (:mod:`~sepconv.optimize.costs`), what it
*loses* on the user's data (:mod:`~sepconv.optimize.sensitivity`), and the *plan* that meets a speed or
accuracy budget (:mod:`~sepconv.optimize.planner`), applied, fine-tuned and measured again end to end
(:mod:`~sepconv.optimize.run`).
"""
