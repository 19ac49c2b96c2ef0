"""Area and accuracy from a stratified reference sample (Olofsson et al. 2014; Stehman 2014):
the design of a sample to label over a driver map, and the estimators over a labelled one."""
