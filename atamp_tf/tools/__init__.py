"""Tools beside the pipeline: train-step speed (bench), weight-loss landscapes (landscape),
the reproduction and sweep reports (reproduction, sweep), and run curves (plot_cli)."""
