"""What flows between the stages, and the pure rules about it; every stage may import it.

    records.py  the records: Context -> Trajectory -> ScoredTrajectory -> Group, validated where made
    offer.py    the job offer the policy writes: size bounds, safe XML parsing, skill and language checks
    rewards.py  the reward of one offer from its five criterion scores
"""
