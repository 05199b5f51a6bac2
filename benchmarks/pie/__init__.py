"""PIE-Bench (PnPInversion, Ju et al., ICLR 2024) for every inverter x editor of this project.

    python -m benchmarks.pie --data DIR --model sd-1.4 --inverters ddim,rnri --editors p2p,masactrl,diffedit
    python -m benchmarks.pie export-shapes --out DIR [--scenes N]

Modules, one job each: `data` (the mapping file, the mask's run-length code, the output layout),
`protocol` (how the authors' scripts run each editor, mirrored), `metrics` (their metric
definitions and units, networks by hub id), `lpips_squeeze` (LPIPS's SqueezeNet variant),
`runner` (edit, save, measure, resume, shard), `report` (the tables), `shapes_export` (the shapes
world in PIE-Bench's format), `cli`.
"""
