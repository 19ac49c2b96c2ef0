"""``forestnet sample-design``: a stratified reference sample over driver maps, to label in
QGIS."""
