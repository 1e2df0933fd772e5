"""The asyncio delivery engine around the pure core: intake, slots, holds, screening,
outcomes, commits.
"""
