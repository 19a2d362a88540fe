"""matplotlib figures for the lessons and the report, one function per figure, named for what it shows. Each
takes plain arrays and returns a Figure; saving is the caller's business (lesson.savefig). Nothing here
computes anything a test relies on.

    plots/toy.py        the toy world (lessons 01-03): superposition, the SAE on the toy, known features, the sweep
    plots/language.py   the language model (lessons 04-08): the transformer, its SAE, features, steering
    plots/panel.py      what both share: a panel that says why it is empty

A lesson calls them as plots.NAME; the names are gathered here."""
from tinymono.plots.language import density_histogram, features_vs_neurons_scatter
from tinymono.plots.panel import empty_panel
from tinymono.plots.toy import (decoder_rows_vs_true, dimensionality, feature_directions, gradcheck_errors,
                                gram_and_norms, latent_responses, phase_diagram, sweep_tradeoff, toy_activations,
                                training_runs)

__all__ = ["decoder_rows_vs_true", "density_histogram", "dimensionality", "empty_panel", "feature_directions",
           "features_vs_neurons_scatter", "gradcheck_errors", "gram_and_norms", "latent_responses", "phase_diagram",
           "sweep_tradeoff", "toy_activations", "training_runs"]
