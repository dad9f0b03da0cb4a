"""Stage 2, features: the causal volume-price features and forward-direction labels of one
ticker (`causal`: bar t uses bars <= t only), the feature store that builds them for every
ticker as Ray tasks and turns them into the sample matrix (`store`), and the time-sorted sample
file the search and the final fit read a month at a time (`samples`).

Imports `vpt_ray.data` and `vpt_ray.core` only.
"""
