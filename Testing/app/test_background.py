"""The Slicer panel's worker: analyze_case in a thread, progress drained by polling, cancel."""
from EmphysemaXAILib.app.background import BackgroundAnalysis
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom


def test_background_analysis_reports_progress_and_a_result_and_can_be_cancelled():
    phantom = generate_phantom(PhantomParams(size="small", seed=4, extent_pct=10, pattern="centrilobular", noise_hu=0))
    options = AnalysisOptions(engine="classical", model="none")
    job = BackgroundAnalysis(phantom.ct, options).start()
    job.wait(300)
    assert not job.running and job.error is None
    messages = job.progress()
    assert messages[0] == (0.0, "reading the volume") and messages[-1] == (1.0, "done")
    assert [f for f, _ in messages] == sorted(f for f, _ in messages)
    assert job.progress() == []                                   # drained
    whole = job.result.qct.region("whole")
    assert abs(whole["laa950_pct"] - phantom.truth["extent_pct"]) < 1.0
    stopped = BackgroundAnalysis(phantom.ct, options)
    stopped.cancel()                                              # before the first step
    stopped.start().wait(60)
    assert stopped.cancelled and stopped.result is None and "cancelled before read" in str(stopped.error)
