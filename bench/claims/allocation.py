def run_study(out, quick, jobs):
    pass
def report(records, folder, plots):
    return ""
